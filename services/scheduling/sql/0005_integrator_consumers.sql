-- Where the JetStream consumers scheduling makes for a credential start (IntegratorCredentialIssued
-- v2): 'all' (the clinic's first event in each stream) or 'new' (from issued_at on). Kept, so
-- that a consumer made later (a stream that did not exist yet at issuance) starts the same way.
-- Credentials issued before made their consumers themselves, from the first event by default.
ALTER TABLE integrator_credentials
    ADD COLUMN consumers_start text NOT NULL DEFAULT 'all' CHECK (consumers_start IN ('all', 'new'));
