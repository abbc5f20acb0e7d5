package vigil

// Store is everything a Vigil node keeps. The embedded store
// (internal/pebble) and the PostgreSQL store implement it, and both pass
// the conformance suite in internal/storetest.
type Store interface {
	PatientStore
	DeviceStore
	UserStore
	ReadingStore
	ObservationStore
	AlertStore
	DeadLetterStore
	MappingStore
	RuleStore
	EventStore
	ReviewStore
	SubscriptionStore
	// Close flushes and releases the store; it waits for in-flight appends.
	Close() error
}
