"""A fal-compatible queue server for Hailuo 2.3 Fast, for tests, benchmarks and the offline demo.

The real `fal_client` talks to it when FAL_QUEUE_RUN_HOST names it and SSL_CERT_FILE holds its CA.
"""
