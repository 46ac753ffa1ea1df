package embeddings

import (
	"strings"
	"unicode/utf8"
)

// Chunk is a piece of a document's body, embedded with the title.
type Chunk struct {
	// Start and End are the piece's place in the body, in characters
	// (PostgreSQL's substr counts characters too).
	Start, End int
	// Text is what is embedded: the title, a blank line, the piece.
	Text string
}

// ChunkSize is the most bytes of body in one chunk: about 250 tokens of
// English, well inside every embedding model's input limit, and small
// enough that a chunk is about one thing.
const ChunkSize = 1200

// Split cuts a body into chunks of at most size bytes (ChunkSize when 0),
// at a paragraph break where there is one in the second half of the
// window, else at a line or sentence end, else at a space, else anywhere
// between characters. A body of only white space gives one chunk: the
// title alone.
func Split(title, body string, size int) []Chunk {
	if size <= 0 {
		size = ChunkSize
	}
	prefix := strings.TrimSpace(title) + "\n\n"
	var out []Chunk
	pos, chars := 0, 0 // byte and character offsets of body[pos:]
	for {
		skip := len(body[pos:]) - len(strings.TrimLeft(body[pos:], " \t\r\n"))
		chars += skip // white space is one byte a character
		pos += skip
		if pos >= len(body) {
			break
		}
		end := len(body)
		if end-pos > size {
			end = cut(body[pos:pos+size+1], size) + pos
		}
		piece := strings.TrimRight(body[pos:end], " \t\r\n")
		n := utf8.RuneCountInString(piece)
		out = append(out, Chunk{Start: chars, End: chars + n, Text: prefix + piece})
		chars += utf8.RuneCountInString(body[pos:end])
		pos = end
	}
	if len(out) == 0 {
		out = append(out, Chunk{Text: strings.TrimSpace(title)})
	}
	return out
}

// cut is where to end a chunk within w (len(w) = size+1): the end of the
// last paragraph, line, sentence or word that ends in w's second half.
func cut(w string, size int) int {
	half := size / 2
	for _, sep := range []string{"\n\n", "\n", ". ", "? ", "! ", " "} {
		if i := strings.LastIndex(w, sep); i >= half {
			return i + len(sep)
		}
	}
	i := size
	for i > 0 && !utf8.RuneStart(w[i]) {
		i--
	}
	return i
}
