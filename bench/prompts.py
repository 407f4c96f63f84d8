"""The English text that the LLM benchmarks cut their prompts from (bench/llm.py,
bench/peers/load.py): the same words for every system measured."""

TEXT = (
    "The history of computing is a story of abstractions piled on abstractions. Early machines "
    "were programmed by rewiring panels; stored programs made software possible; compilers let "
    "people write in terms of problems rather than registers. Operating systems shared one "
    "machine among many users, networks joined machines into systems, and the web joined systems "
    "into one public space. Each layer hid the one below and let more people build more things. "
    "Today language models are another layer: they turn requests in plain words into programs, "
    "summaries and answers, and serving them efficiently has become its own engineering craft, "
    "with paged memory for attention caches, continuous batching of requests, and careful "
    "scheduling of every step so that no cycle of the processor is wasted. "
)
