"""The screens of the triage UI."""
