package bench

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
)

func TestIDsIncreasePerClientOrComeInRandomOrder(t *testing.T) {
	for _, random := range []bool{false, true} {
		w := &worker{r: &runner{cfg: Config{RunID: "r1", RandomIDs: random}}, id: 3,
			idRng: rand.New(rand.NewPCG(1, 2))}
		ids := make([]string, 1000)
		seen := map[string]bool{}
		for i := range ids {
			ids[i] = w.newID("e")
			if seen[ids[i]] {
				t.Fatalf("random=%v: id %s twice", random, ids[i])
			}
			seen[ids[i]] = true
		}
		// Within one number of digits (sequences 100..999), increasing ids
		// sort as they were made; random ones do not.
		tail := ids[99:999] // sequences 100..999
		if sorted := slices.IsSorted(tail); sorted == random {
			t.Errorf("random=%v: ids 100..999 sorted = %v, want %v (first %s, %s)", random, sorted, !random, tail[0], tail[1])
		}
	}
}

// newID builds ids by hand; they must read as the fmt patterns documented.
func TestIDsKeepTheirFormat(t *testing.T) {
	for _, random := range []bool{false, true} {
		w := &worker{r: &runner{cfg: Config{RunID: "r1", RandomIDs: random}}, id: 12,
			idRng: rand.New(rand.NewPCG(1, 2))}
		check := rand.New(rand.NewPCG(1, 2))
		for seq := uint64(1); seq <= 300; seq++ {
			want := fmt.Sprintf("br1-e12-%d", seq)
			if random {
				want = fmt.Sprintf("br1-e%016x-12-%d", check.Uint64(), seq)
			}
			if got := w.newID("e"); got != want {
				t.Fatalf("random=%v: id %q, want %q", random, got, want)
			}
		}
	}
}
