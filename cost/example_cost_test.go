package cost_test

import (
	"fmt"

	"github.com/batchctl/batchctl/cost"
)

func ExampleTable_Cost() {
	// 2 000 prompt tokens of which 1 024 cached, 100 output tokens, on a snapshot of gpt-4o-mini.
	c, ok, err := cost.Default().Cost("gpt-4o-mini-2024-07-18", cost.Usage{Input: 2000, Cached: 1024, Output: 100})
	if err != nil || !ok {
		panic(err)
	}
	sync, _ := c.Sync()
	fmt.Println(c.USD(), sync.USD())
	// Output: 0.000141600000 0.000283200000
}
