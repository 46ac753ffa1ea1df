package embeddings

import (
	"strings"
	"testing"
	"unicode/utf8"
)

// TestSplit: chunks cover the body in order, each at most size bytes, cut
// at paragraph, sentence or word ends, with offsets in characters that
// point at the chunk's text.
func TestSplit(t *testing.T) {
	para := strings.Repeat("Zürich déploie le système. ", 20) // 2-byte characters too
	for _, body := range []string{
		"",
		"   \n\n ",
		"short body",
		para + "\n\n" + para + "\n\n" + para,
		strings.Repeat("x", 5000), // no break anywhere
		strings.Repeat("é", 3000), // no break, multi-byte
		"  lead\n\n" + strings.Repeat("word ", 700), // leading space
	} {
		cs := Split("Title", body, 400)
		runes := []rune(body)
		prev := 0
		for i, c := range cs {
			piece := strings.TrimPrefix(c.Text, "Title\n\n")
			if strings.TrimSpace(body) == "" {
				if len(cs) != 1 || c.Text != "Title" {
					t.Errorf("blank body: %+v", cs)
				}
				continue
			}
			if len(piece) > 401 || !utf8.ValidString(piece) {
				t.Errorf("chunk %d: %d bytes (valid %v)", i, len(piece), utf8.ValidString(piece))
			}
			if c.Start < prev || c.End < c.Start || c.End > len(runes) || string(runes[c.Start:c.End]) != piece {
				t.Fatalf("chunk %d [%d:%d] does not point at its text %q", i, c.Start, c.End, piece)
			}
			prev = c.End
		}
		if strings.TrimSpace(body) != "" {
			var all string
			for _, c := range cs {
				all += strings.TrimPrefix(c.Text, "Title\n\n")
			}
			if strings.Join(strings.Fields(all), "") != strings.Join(strings.Fields(body), "") {
				t.Errorf("chunks lose text of %.30q", body)
			}
		}
	}
	if cs := Split("T", para+"\n\n"+para, 800); !strings.HasSuffix(cs[0].Text, "système.") {
		t.Errorf("first chunk does not end at a sentence: %q", cs[0].Text[len(cs[0].Text)-20:])
	}
}
