-- The PostgreSQL migration of the same number makes the entitlement checks set-wise for bulk
-- generation. SQLite has only row triggers (cheap here: no round trips), so it keeps them and
-- gains the same rules: the household belongs to the entitlement's programme, an entitlement
-- only changes from granted to cancelled, households are never deleted.
DROP TRIGGER entitlements_eligible;

CREATE TRIGGER entitlements_eligible BEFORE INSERT ON entitlements
BEGIN
    SELECT RAISE(ABORT, 'cva: household is not verified in the entitlement''s programme')
    WHERE NOT EXISTS (SELECT 1 FROM households h WHERE h.id = NEW.household_id
                      AND h.status = 'verified' AND h.programme_id = NEW.programme_id);
    SELECT RAISE(ABORT, 'cva: household has an open duplicate flag')
    WHERE EXISTS (SELECT 1 FROM dedup_flags f JOIN households o ON o.id = f.household_b
                  WHERE f.household_a = NEW.household_id AND f.status = 'open' AND o.status <> 'withdrawn')
       OR EXISTS (SELECT 1 FROM dedup_flags f JOIN households o ON o.id = f.household_a
                  WHERE f.household_b = NEW.household_id AND f.status = 'open' AND o.status <> 'withdrawn');
    SELECT RAISE(ABORT, 'cva: the budget line is not one of the entitlement''s programme')
    WHERE NOT EXISTS (SELECT 1 FROM budget_lines b WHERE b.id = NEW.budget_line_id
                      AND b.programme_id = NEW.programme_id);
END;

CREATE TRIGGER entitlements_guarded BEFORE UPDATE ON entitlements
WHEN NEW.id IS NOT OLD.id OR NEW.household_id IS NOT OLD.household_id
  OR NEW.programme_id IS NOT OLD.programme_id OR NEW.budget_line_id IS NOT OLD.budget_line_id
  OR NEW.modality IS NOT OLD.modality OR NEW.cycle IS NOT OLD.cycle OR NEW.tranche IS NOT OLD.tranche
  OR NEW.amount IS NOT OLD.amount OR NEW.currency IS NOT OLD.currency
  OR NEW.rule_version IS NOT OLD.rule_version OR NEW.entry_id IS NOT OLD.entry_id
  OR NEW.created_at IS NOT OLD.created_at OR NEW.created_by IS NOT OLD.created_by
  OR OLD.status <> 'granted'
BEGIN
    SELECT RAISE(ABORT, 'cva: an entitlement only changes from granted to cancelled');
END;

CREATE TRIGGER households_no_delete BEFORE DELETE ON households
BEGIN SELECT RAISE(ABORT, 'cva: households is append-only: DELETE refused (withdraw instead)'); END;

CREATE TRIGGER households_identity BEFORE UPDATE ON households
WHEN NEW.id IS NOT OLD.id OR NEW.programme_id IS NOT OLD.programme_id
BEGIN SELECT RAISE(ABORT, 'cva: a household''s id and programme never change'); END;
