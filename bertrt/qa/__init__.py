"""The ground floor for QA data: tokenization, SQuAD examples, features (windows), post-processing and metrics.

Imports only the core (`bertrt.errors`, `bertrt.forking`); every stage takes its QA data from here."""
