"""The audit log read through the API (`/auditlogs`); recording lives in app.audit."""
