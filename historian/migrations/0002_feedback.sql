-- Operator feedback from the daemons (mqtt.publish_feedback, edge/feedback_mqtt.py): through the daemon's outbox,
-- so each answer has a seq in that outbox's sequence (counted in the gap bookkeeping like the decisions) and is
-- replayable. event_id is the decision answered; the daemon's decision ids are UUIDs (the parser refuses others).
ALTER TABLE operator_feedback ALTER COLUMN event_id TYPE uuid USING event_id::uuid;
ALTER TABLE operator_feedback
    ADD COLUMN seq         bigint,
    ADD COLUMN feedback_id text,
    ADD COLUMN model_id    text,
    ADD COLUMN verdict     text;
CREATE INDEX operator_feedback_event ON operator_feedback (event_id);
CREATE INDEX operator_feedback_source_seq ON operator_feedback (line, camera, seq) WHERE seq IS NOT NULL;

-- The labels joined to the decisions: the latest answer about each decision (a second answer replaces the first
-- on the daemon too), with what the model said. A decision not (yet) in the table still shows its answer.
CREATE VIEW decision_feedback AS
SELECT DISTINCT ON (f.event_id)
       f.event_id, f.line, f.camera, f.kind, f.label AS operator_label, f.verdict, f.who, f.answered_at,
       d.decided_at, d.part_id, d.lot, d.label AS model_label, d.is_defect, d.score, d.threshold,
       COALESCE(d.model_id, f.model_id) AS model_id
FROM operator_feedback f
LEFT JOIN decisions d ON d.event_id = f.event_id
ORDER BY f.event_id, f.answered_at DESC;
