"""The pure domain: vocabulary, questions, complexity classes, model names, the transformer, training, scoring."""
