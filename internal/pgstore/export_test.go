package pgstore

// OneStatementAppends is how many batches s stored with the upserting form
// of appendStatement, and PlainAppends how many with its plain form.
func OneStatementAppends(s *Store) int64 { return s.oneStatement.Load() }
func PlainAppends(s *Store) int64        { return s.plain.Load() }
