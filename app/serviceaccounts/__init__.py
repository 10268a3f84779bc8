"""Service accounts: client id + secret for `client_credentials` tokens and Helm basic auth."""
