-- A batch's status is derived from its lines' statuses (`Batches::settle_status`) after every
-- posting of outcomes; a statement reconciliation settles a hundred batches at once. With
-- the status in the index the count per batch and status reads the index alone instead of
-- every line's row. It replaces the index on `batch_id` alone (its prefix).
CREATE INDEX batch_lines_batch_status ON batch_lines (batch_id, status);
DROP INDEX batch_lines_batch;
