// Command benchgen writes the deterministic data sets of make bench and make demo, one JSON object a line on stdout:
//
//	benchgen requests 1000000        # Batch API chat request lines, about 540 bytes each (submit --dry-run)
//	benchgen requests -text-bytes 200 1000000   # shorter ones, under the 512 MiB upload cap (the load)
//	benchgen records 1000000         # data records {"id","text"} for the built-in chat form (end to end)
//	benchgen records -text-bytes 5000 210000   # 1 GB of larger records (peak RSS of a real submit)
//	benchgen reviews 3000            # product reviews {"id","product","rating","title","text"} (examples/reviews.jsonl)
//
// The same arguments always produce the same bytes (a seeded PCG), so figures from different runs compare.
package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprintln(stderr, "usage: benchgen requests|records|reviews [-seed N] [-text-bytes N] COUNT")
		return 2
	}
	kind := args[0]
	fs := flag.NewFlagSet("benchgen "+kind, flag.ContinueOnError)
	fs.SetOutput(stderr)
	seed := fs.Uint64("seed", 7, "seed of the generator")
	textBytes := fs.Int("text-bytes", -1, "approximate length of each text (requests: default 250, about 540 bytes a line; records: default a review of 1 to 4 sentences)")
	if err := fs.Parse(args[1:]); err != nil {
		return 2
	}
	if fs.NArg() != 1 {
		fmt.Fprintln(stderr, "benchgen: want exactly one COUNT")
		return 2
	}
	n, err := strconv.Atoi(fs.Arg(0))
	if err != nil || n < 0 {
		fmt.Fprintf(stderr, "benchgen: bad COUNT %q\n", fs.Arg(0))
		return 2
	}
	g := &gen{rng: rand.New(rand.NewPCG(*seed, 0x9e3779b97f4a7c15))}
	w := bufio.NewWriterSize(stdout, 1<<20)
	switch kind {
	case "requests":
		if *textBytes < 0 {
			*textBytes = 250
		}
		err = g.requests(w, n, *textBytes)
	case "records":
		err = g.records(w, n, *textBytes)
	case "reviews":
		err = g.reviews(w, n)
	default:
		fmt.Fprintf(stderr, "benchgen: unknown kind %q\n", kind)
		return 2
	}
	if err == nil {
		err = w.Flush()
	}
	if err != nil && !errors.Is(err, io.ErrClosedPipe) {
		fmt.Fprintf(stderr, "benchgen: %v\n", err)
		return 1
	}
	return 0
}

type gen struct {
	rng *rand.Rand
	buf []byte
}

// requests writes chat request lines of about 540 bytes: the shape issue 4 and issue 5 measure.
func (g *gen) requests(w *bufio.Writer, n, textBytes int) error {
	for i := range n {
		g.buf = g.buf[:0]
		g.buf = append(g.buf, `{"custom_id":"review-`...)
		g.buf = strconv.AppendInt(g.buf, int64(i+1), 10)
		g.buf = append(g.buf, `","method":"POST","url":"/v1/chat/completions","body":{"model":"gpt-4o-mini","messages":[`+
			`{"role":"system","content":"Classify the sentiment of the review as positive, negative or neutral."},`+
			`{"role":"user","content":`...)
		g.buf = appendJSONString(g.buf, g.text(textBytes))
		g.buf = append(g.buf, "}],\"max_tokens\":5}}\n"...)
		if _, err := w.Write(g.buf); err != nil {
			return err
		}
	}
	return nil
}

// records writes data records {"id":"r-N","text":...}; textBytes 0 means a short review.
func (g *gen) records(w *bufio.Writer, n, textBytes int) error {
	for i := range n {
		g.buf = g.buf[:0]
		g.buf = append(g.buf, `{"id":"r-`...)
		g.buf = strconv.AppendInt(g.buf, int64(i+1), 10)
		g.buf = append(g.buf, `","text":`...)
		var text string
		if textBytes > 0 {
			text = g.text(textBytes)
		} else {
			text = g.review(g.rng.IntN(5) + 1).text
		}
		g.buf = appendJSONString(g.buf, text)
		g.buf = append(g.buf, "}\n"...)
		if _, err := w.Write(g.buf); err != nil {
			return err
		}
	}
	return nil
}

// reviews writes product reviews for the demo: realistic enough to read, small enough to commit.
func (g *gen) reviews(w *bufio.Writer, n int) error {
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	for i := range n {
		rating := ratingWeights[g.rng.IntN(len(ratingWeights))]
		r := g.review(rating)
		rec := struct {
			ID      string `json:"id"`
			Product string `json:"product"`
			Rating  int    `json:"rating"`
			Title   string `json:"title"`
			Text    string `json:"text"`
		}{fmt.Sprintf("rev-%05d", i+1), r.product, rating, r.title, r.text}
		if err := enc.Encode(rec); err != nil {
			return err
		}
	}
	return nil
}

// text is review prose of about size bytes (whole sentences, at least one).
func (g *gen) text(size int) string {
	var b strings.Builder
	for b.Len() == 0 || b.Len() < size {
		if b.Len() > 0 {
			b.WriteByte(' ')
		}
		pool := [][]string{positive, negative, neutral}[g.rng.IntN(3)]
		b.WriteString(g.fill(pool[g.rng.IntN(len(pool))], products[g.rng.IntN(len(products))]))
	}
	return b.String()
}

type review struct{ product, title, text string }

// review is one review whose tone follows its rating: 4-5 mostly praise, 1-2 mostly complaints, 3 mixed.
func (g *gen) review(rating int) review {
	product := products[g.rng.IntN(len(products))]
	var main, other []string
	var titles []string
	switch {
	case rating >= 4:
		main, other, titles = positive, neutral, positiveTitles
	case rating <= 2:
		main, other, titles = negative, neutral, negativeTitles
	default:
		main, other, titles = neutral, append(append([]string{}, positive...), negative...), neutralTitles
	}
	var b strings.Builder
	b.WriteString(g.fill(openers[g.rng.IntN(len(openers))], product))
	for range 1 + g.rng.IntN(3) {
		pool := main
		if g.rng.IntN(4) == 0 {
			pool = other
		}
		b.WriteByte(' ')
		b.WriteString(g.fill(pool[g.rng.IntN(len(pool))], "it"))
	}
	return review{product: product, title: titles[g.rng.IntN(len(titles))], text: b.String()}
}

// fill replaces the placeholders of a sentence.
func (g *gen) fill(s, product string) string {
	for _, p := range []struct {
		key  string
		vals []string
	}{
		{"{weeks}", []string{"two", "three", "six", "eight", "ten"}},
		{"{person}", []string{"my wife", "my husband", "my son", "my daughter", "a friend", "my partner", "my dad"}},
		{"{aspect}", aspects},
	} {
		for strings.Contains(s, p.key) {
			s = strings.Replace(s, p.key, p.vals[g.rng.IntN(len(p.vals))], 1)
		}
	}
	s = strings.ReplaceAll(s, "{product}", product)
	return strings.ToUpper(s[:1]) + s[1:]
}

// appendJSONString appends s as a JSON string; the generated texts are ASCII without control characters.
func appendJSONString(b []byte, s string) []byte {
	q, _ := json.Marshal(s)
	return append(b, q...)
}

var ratingWeights = []int{5, 5, 5, 5, 4, 4, 4, 3, 3, 2, 2, 1, 1}

var products = []string{
	"AeroPress coffee maker", "Kindle Paperwhite", "Instant Pot Duo", "Anker PowerCore 10000", "Logitech MX Master 3S",
	"Sony WH-1000XM5 headphones", "Bose SoundLink Flex speaker", "Ninja air fryer", "Dyson V11 vacuum",
	"Hydro Flask water bottle", "Lodge cast iron skillet", "Philips Sonicare toothbrush", "Fitbit Charge 6",
	"Roku Streaming Stick", "Echo Dot smart speaker", "Osprey daypack", "Yeti Rambler tumbler", "OXO salad spinner",
	"Brita water filter pitcher", "TP-Link mesh Wi-Fi router", "SanDisk 256 GB microSD card", "Crocs classic clogs",
	"Levi's 501 jeans", "Nintendo Switch Pro controller", "Cuisinart toaster", "KitchenAid hand mixer",
	"Eufy robot vacuum", "Ring video doorbell", "Garmin Forerunner 255", "JBL Flip 6 speaker", "Moleskine notebook",
	"Rubbermaid food containers", "Samsung T7 portable SSD", "Apple AirTag", "Bamboo cutting board set",
	"Weighted blanket", "LED desk lamp", "Yoga mat", "Electric kettle", "Memory foam pillow",
}

var aspects = []string{
	"battery life", "build quality", "price", "sound", "packaging", "size", "weight", "setup", "app", "manual",
	"color", "noise level", "customer service", "warranty", "shipping",
}

var openers = []string{
	"Bought the {product} {weeks} weeks ago.",
	"I ordered the {product} as a gift for {person}.",
	"This is my second {product}.",
	"Picked up the {product} on sale.",
	"I have used the {product} every day for {weeks} weeks.",
	"We replaced our old one with the {product}.",
	"Got the {product} after reading a lot of reviews.",
	"Ordered the {product} for the office.",
}

var positive = []string{
	"It works exactly as described and the {aspect} is excellent.",
	"Honestly one of the best purchases I have made this year.",
	"Setup took five minutes and it has worked flawlessly since.",
	"The {aspect} surprised me, much better than I expected for the price.",
	"{person} loves it and uses it daily.",
	"Solid, well made, and it looks great on the counter.",
	"Would buy again without a second thought.",
	"Fast shipping and the {aspect} is top notch.",
	"It does one thing and does it really well.",
	"Five stars, I already recommended it to {person}.",
}

var negative = []string{
	"It stopped working after {weeks} weeks.",
	"The {aspect} is a real disappointment.",
	"Arrived with a cracked case and a missing cable.",
	"Customer service never answered my emails.",
	"Way too loud, and the {aspect} is worse than on my old one.",
	"I returned it, not worth the money.",
	"The instructions are useless and the app keeps crashing.",
	"Feels cheap and flimsy, the {aspect} is awful.",
	"It overheats after a few minutes of use.",
	"Do not buy this, it broke the first time {person} used it.",
}

var neutral = []string{
	"It is fine for the price, nothing special.",
	"The {aspect} is okay but could be better.",
	"Does the job, although the {aspect} took some getting used to.",
	"Not bad, not great, about what I expected.",
	"It is smaller than it looks in the pictures.",
	"Delivery took {weeks} days longer than promised, the product itself is average.",
	"Some features are nice, others feel unfinished.",
	"I have mixed feelings about the {aspect}.",
}

var positiveTitles = []string{"Love it", "Great value", "Exactly what I needed", "Highly recommend", "Works great", "Best purchase this year"}
var negativeTitles = []string{"Disappointed", "Broke quickly", "Not worth it", "Returned it", "Avoid", "Poor quality"}
var neutralTitles = []string{"It's okay", "Average", "Does the job", "Mixed feelings", "Fine for the price"}
