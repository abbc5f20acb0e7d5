//go:build race

package mqtt

// raceEnabled: the race detector drops sync.Pool items on purpose, so
// allocation counts are not checked under it.
const raceEnabled = true
