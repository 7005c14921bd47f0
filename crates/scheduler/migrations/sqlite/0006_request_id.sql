-- The request id of the API call that created a job (X-Request-Id), so one id
-- follows the job from its frontend through the scheduler to its worker's logs.
ALTER TABLE jobs ADD COLUMN request_id TEXT;
