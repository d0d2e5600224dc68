-- The event store of one service. Every service has the same tables in its own schema.

CREATE TABLE events (
    position        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    stream_id       text        NOT NULL,
    version         integer     NOT NULL CHECK (version > 0),
    event_id        uuid        NOT NULL UNIQUE,
    type            text        NOT NULL,
    schema_version  integer     NOT NULL,
    clinic_id       text        NOT NULL,
    occurred_at     timestamptz NOT NULL,
    correlation_id  uuid        NOT NULL,
    causation_id    uuid,
    data            jsonb       NOT NULL,
    trace_context   jsonb       NOT NULL DEFAULT '{}',
    CONSTRAINT events_stream_version UNIQUE (stream_id, version)
);

-- What the relay has had acknowledged by JetStream.
CREATE TABLE relay_checkpoints (
    relay       text        PRIMARY KEY,
    position    bigint      NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- Events a consumer has handled; written in the same transaction as the handler's effects.
CREATE TABLE inbox (
    consumer    text        NOT NULL,
    event_id    uuid        NOT NULL,
    handled_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, event_id)
);

-- One call per append (calls are pipelined, and grouped into one transaction when several
-- appends wait at once). The advisory lock is transaction-scoped, so it is held until
-- COMMIT: a writer takes its positions only after the previous writer has committed, which
-- makes position order equal commit order. Without it, a transaction that drew position 7
-- and commits after the one that drew 8 is invisible to a reader that has moved past 7, and
-- that reader (the relay) would skip it forever (the bigserial trap). The eventsourcing
-- library takes LOCK TABLE ... IN EXCLUSIVE MODE for the same reason; an advisory lock per
-- store leaves plain reads and other tables untouched.
--
-- A version conflict inserts nothing and returns one row with a NULL position and the
-- stream's current version, so several appends can share one transaction (group commit)
-- without one conflict aborting the others.
CREATE FUNCTION append_events(
    p_request         integer,
    p_lock_key        bigint,
    p_channel         text,
    p_stream_id       text,
    p_expected        integer,
    p_event_ids       uuid[],
    p_types           text[],
    p_schema_versions integer[],
    p_clinic_id       text,
    p_occurred_at     timestamptz,
    p_correlation_id  uuid,
    p_causation_id    uuid,
    p_data            jsonb[],
    p_trace_context   jsonb
) RETURNS TABLE (out_request integer, out_position bigint, out_version integer)
LANGUAGE plpgsql AS $$
DECLARE
    current_version integer;
BEGIN
    PERFORM pg_advisory_xact_lock(p_lock_key);
    SELECT coalesce(max(e.version), 0) INTO current_version
      FROM events e WHERE e.stream_id = p_stream_id;
    IF current_version <> p_expected THEN
        RETURN QUERY SELECT p_request, NULL::bigint, current_version;
        RETURN;
    END IF;
    RETURN QUERY
    WITH inserted AS (
    INSERT INTO events (stream_id, version, event_id, type, schema_version, clinic_id,
                        occurred_at, correlation_id, causation_id, data, trace_context)
    SELECT p_stream_id, p_expected + n::integer, ev.event_id, ev.type, ev.schema_version,
           p_clinic_id, p_occurred_at, p_correlation_id, p_causation_id, ev.data, p_trace_context
      FROM unnest(p_event_ids, p_types, p_schema_versions, p_data)
           WITH ORDINALITY AS ev(event_id, type, schema_version, data, n)
     ORDER BY n
    RETURNING events.position, events.version
    )
    SELECT p_request, inserted.position, inserted.version FROM inserted ORDER BY inserted.position;
    -- Wakes the relay; delivered at COMMIT, never for a rolled-back append.
    PERFORM pg_notify(p_channel, '');
END;
$$;
