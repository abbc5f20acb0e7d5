package pgstore

// OneStatementAppends is how many batches s stored with appendSQL, and
// PlainAppends how many with appendPlainSQL.
func OneStatementAppends(s *Store) int64 { return s.oneStatement.Load() }
func PlainAppends(s *Store) int64        { return s.plain.Load() }
