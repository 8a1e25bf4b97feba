SELECT identity_key, display_name FROM dl_resolved.people ORDER BY updated_at DESC LIMIT 20
