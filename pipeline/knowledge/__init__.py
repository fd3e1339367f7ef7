"""Knowledge ingestion primitives: document text extraction, chunking, and sentence embeddings.

Pure and synchronous (no database, no HTTP, no asyncio); callers run the CPU-heavy parts off the event
loop. `extractors` turns bytes into text, `chunking` turns text into passages, `embedder` turns passages
into unit vectors whose dot product is their cosine similarity.
"""
