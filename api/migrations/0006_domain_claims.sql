-- A custom domain is held by whoever proves it through DNS, not by whoever typed it first.
--
-- hostname was UNIQUE over every row, so an unverified claim locked the real owner out for
-- good. Now a hostname is unique among verified domains only; any number of workspaces may
-- hold a pending claim (one each), the first verification drops the others' (api/services/domains.py),
-- and a pending claim lapses after H0P_DOMAIN_CLAIM_EXPIRY_S.
ALTER TABLE domains DROP CONSTRAINT domains_hostname_key;
CREATE UNIQUE INDEX domains_verified_hostname ON domains (hostname) WHERE verified_at IS NOT NULL;
-- Also the index of lookups by hostname (the claims on one host).
ALTER TABLE domains ADD CONSTRAINT domains_hostname_workspace_key UNIQUE (hostname, workspace_id);
