window.search = {"doc_urls":["ch04-01-owning-values.html"]};
