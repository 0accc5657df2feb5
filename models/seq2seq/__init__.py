"""The encoder-decoder family: a source sequence to a target sequence (notes 000 "Seq to Seq": ① Encoder-Decoder
② Attention ③ Transformer; notes 002 "Seq-to-Vector followed by vector-to-seq encoder decoder")."""
