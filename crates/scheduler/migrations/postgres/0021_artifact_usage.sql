-- What a text engine counted of a job's run (tokens read and written, and
-- why it stopped), as the worker reported it with the text artifact: the
-- JSON of tessera_api::internal::TextUsage. The gateway answers OpenAI's
-- `usage` and `finish_reason` from it.
ALTER TABLE artifacts ADD COLUMN usage TEXT;
