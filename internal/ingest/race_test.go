//go:build race

package ingest

// raceEnabled: the race detector drops sync.Pool items on purpose, so
// allocation counts are not checked under it.
const raceEnabled = true
