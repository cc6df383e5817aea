"""Everything that talks to an Ollama server or its model store.

* ``versions``  which Ollama a server is and what its version can do;
* ``api``       the one HTTP client for the server (version, blobs, create, show, render);
* ``store``     finding the server's local store and placing blobs and manifests in it;
* ``modelfile`` a model definition, rendered as a Modelfile and as a create request;
* ``register``  blobs then model, through the store or the API;
* ``serve``     starting ``ollama serve`` with the settings these models want;
* ``bench``     timing a registered model from Ollama's own counters;
* ``sweep``     trying the settings that change speed on servers of its own.
"""
