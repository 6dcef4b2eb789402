"""The command line: parsing, the commands, doctor and suggestions for slips."""
