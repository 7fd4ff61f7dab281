-- A dead letter is evidence of what a unit sent, kept once: a QoS 1 redelivery after a crash
-- (or the retry of a batch whose COMMIT outcome was lost) decodes to the same rejects again,
-- and must not store them twice (reliability promise: nothing counted twice).  Rows are keyed
-- by a fingerprint of (topic, reason, source message digest and rank, payload bytes) computed
-- by the store (store/dead_letters.py); a repeat only moves last_recv_at.  Rows written before
-- this migration get a fingerprint that includes their id, so none of them merges.
ALTER TABLE dead_letters ADD COLUMN fingerprint bytea;
ALTER TABLE dead_letters ADD COLUMN last_recv_at timestamptz;
UPDATE dead_letters
   SET fingerprint = sha256(convert_to('legacy:' || id::text, 'UTF8')),
       last_recv_at = recv_at;
ALTER TABLE dead_letters ALTER COLUMN fingerprint SET NOT NULL;
ALTER TABLE dead_letters ALTER COLUMN last_recv_at SET NOT NULL;
CREATE UNIQUE INDEX dead_letters_fingerprint ON dead_letters (fingerprint);
