"""The text a run reads: corpora, vocabularies, batches, the validation text and copy checks."""
