"""Knowledge on the control plane: sources and their indexed generations, uploads, the background
ingestion worker, the snapshot compiled into each agent version, retrieval, and knowledge gaps.

    repository   SQL over knowledge_sources / knowledge_generations / knowledge_chunks
    uploads      the uploads table: 25 MB files that expire unless attached to a source
    fetch        URL sources over the address-guarded HTTP client (control_api.net_guard)
    ingest       one source -> text -> passages -> embeddings -> a new generation (or "unchanged")
    worker       the bounded queue, the consumers, restart resume, the auto-refresh/GC tick, drain()
    search       brute-force cosine over a snapshot's generations, embeddings cached per generation
    gaps         questions the agent could not answer, deduplicated and ranked
    service      KnowledgeService: all of the above behind the runtime's KnowledgeSearch/GapRecorder
"""
