"""The dashboard's modal screens: confirmation, clean options and help."""
