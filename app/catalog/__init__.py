"""The application catalog and the offline Helm chart repository."""
