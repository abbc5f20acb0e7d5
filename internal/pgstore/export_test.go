package pgstore

// OneStatementAppends is how many batches s stored with appendSQL.
func OneStatementAppends(s *Store) int64 { return s.oneStatement.Load() }
