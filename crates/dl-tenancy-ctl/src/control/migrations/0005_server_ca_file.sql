-- TLS: the CA file tenants of a server trust (`sslrootcert` of revealed URIs).
ALTER TABLE servers ADD COLUMN ca_file text CHECK (ca_file LIKE '/%');
