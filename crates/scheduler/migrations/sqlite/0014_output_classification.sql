-- Output classification: what the worker's classifier found in each image
-- or video artifact (JSON: model, frames, detections with label and score,
-- or why it could not be classified; NULL when none came), and whether the
-- artifact is withheld (kept for review: only the admin may fetch it).
ALTER TABLE artifacts ADD COLUMN classification TEXT;
ALTER TABLE artifacts ADD COLUMN withheld INTEGER NOT NULL DEFAULT 0;
