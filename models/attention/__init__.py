"""The attention family: Transformer blocks (notes 004 "Transformers", notes 003 "Attention Mechanisms")."""
