"""Barcode scanners (serial/CDC-ACM and keyboard-wedge HID): GS1 scans -> stock actions by the scanner's role.

Codes, roles and the control barcodes (MODE:..., SHELF:..., COUNT:END) are documented in
docs/shelf-protocol.md ("Barcode scanners").
"""
