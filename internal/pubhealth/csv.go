package pubhealth

import (
	"encoding/csv"
	"io"
	"strconv"
)

// CSVHeader is the first line of an aggregate export.
var CSVHeader = []string{"week", "region", "age_band", "sex", "patients", "fever_rate", "mean_spo2", "hypertensive_share", "adherence", "suppressed"}

// WriteCSV writes the table as CSV (RFC 4180): one row per cell, totals
// with "all"; a suppressed cell has empty values and its reason.
func (t *Table) WriteCSV(w io.Writer) error {
	cw := csv.NewWriter(w)
	if err := cw.Write(CSVHeader); err != nil {
		return err
	}
	num := func(v *float64) string {
		if v == nil {
			return ""
		}
		return strconv.FormatFloat(*v, 'f', -1, 64)
	}
	for _, c := range t.Cells {
		row := []string{c.Week, c.Region, c.AgeBand, c.Sex, "", "", "", "", "", c.Suppressed}
		if c.Suppressed == "" {
			row[4], row[5], row[6], row[7], row[8] = strconv.Itoa(c.Patients), num(c.FeverRate), num(c.MeanSpO2), num(c.HypertensiveShare), num(c.Adherence)
		}
		if err := cw.Write(row); err != nil {
			return err
		}
	}
	cw.Flush()
	return cw.Error()
}
