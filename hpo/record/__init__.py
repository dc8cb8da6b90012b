"""What a run reports and what a trial records: the vocabulary every layer above shares."""
