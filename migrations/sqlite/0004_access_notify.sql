-- 0004 on PostgreSQL adds NOTIFY triggers for the session cache; SQLite has no notifications.
-- This file keeps the two migration sequences numbered alike.
SELECT 1;
