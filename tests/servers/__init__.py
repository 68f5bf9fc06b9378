"""Servers that the test suite starts itself: a private Dovecot, a cuttable TCP proxy, a hostile IMAP server."""
