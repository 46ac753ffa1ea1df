// Package embeddings turns text into vectors through an OpenAI-compatible
// embeddings endpoint (POST {base}/embeddings: OpenAI, Ollama, Text
// Embeddings Inference, vLLM), and cuts documents into the chunks that are
// embedded.
//
// The request and response shapes are OpenAI's ("Create embeddings",
// https://platform.openai.com/docs/api-reference/embeddings/create): input
// is an array of strings, model names the model, dimensions (when
// configured) asks for shortened vectors; the answer's data[i].embedding is
// the vector of input data[i].index. Vectors are returned with unit length,
// so cosine similarity is their dot product.
//
// The API key is sent only as the Authorization header and never appears
// in an error (errors quote the provider's message with the key removed).
//
// It imports no other Gatehouse package; embeddingstest has a local
// provider for tests.
package embeddings
