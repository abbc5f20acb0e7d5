-- Version 3: idempotency keys expire (Options.DedupRetention, 7 days by
-- default), found by receive time.
CREATE INDEX reading_ids_received ON reading_ids (received);
