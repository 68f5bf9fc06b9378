"""The bundled demo practice: invented patients, conversations and a patient list.

``carebox.demo.generate`` builds them (``demo_messages(now)``); ``practice.mbox`` and
``patients.csv`` in this folder are its output for a fixed date.
"""
