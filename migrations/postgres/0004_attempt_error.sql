-- An attempt's error apart from what the target or command said: `output`
-- now holds the command's output (stdout, then stderr, each within
-- delivery.output_limit) or the target's answer, also for attempts that
-- succeeded. Older rows keep the error in `output`, as they were written.
ALTER TABLE attempts ADD COLUMN error TEXT;
