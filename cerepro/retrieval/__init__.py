"""Retrieval: the first stage whose runs a cross-encoder re-ranks, and its sizing.

SPLADE is an engine in three modules: ``splade`` (the encoder), ``impacts`` (its quantised impact
index) and ``search`` (exact top-k over that index); ``first_stage`` makes a collection's run with
them and is the grid's job. A second engine (a dense retriever) would add its encoder and index as
modules beside SPLADE's; BM25, the other engine the grids use, is read where candidates are read
(``cerepro.data.bm25``)."""
