// Package idemstore prices the idempotency pattern of creditd's apply in two
// stores: per 1,000-event batch, a lookup that misses and a put for every
// event, then one commit without fsync (the state file is not fsynced; the
// Raft log is). bbolt is laid out as fsm keeps its records (one bucket per
// retention generation, pages filled to 90 %); pebble as an LSM would keep
// them. It is a separate module so that pebble stays out of creditd's build.
//
//	cd docs/experiments/idemstore && go test -run '^$' -bench . -benchtime 200x
//
// Reports wall time and process CPU time (both cores: an LSM compacts in the
// background, and that CPU is taken from the replicas sharing the host) per
// batch, after preloading 10^6 records.
//
// pebble's settings come from the environment, so configurations can be
// compared without edits: MEMTABLE_MB (64), CACHE_MB (64), BLOCK_KB (32),
// NOCOMPRESS=1 (snappy otherwise). Session 7 (2026-11-26, -benchtime 100x):
// the defaults above cost 60 ms per random-id batch (a third in skiplist
// seeks of the large memtables, a fifth in snappy decoding blocks the cache
// did not keep); MEMTABLE_MB=4 29 ms; with CACHE_MB=256 NOCOMPRESS=1 19.6 ms;
// with BLOCK_KB=4 as well 13.4 ms wall, 21.4 ms CPU. In the same run bbolt
// took 33.3 ms (36.2 CPU) with random ids and 2.2 ms (2.6 CPU) with
// increasing ones, against pebble's 10.6 ms (16.5 CPU): an LSM makes random
// ids 2.5x cheaper and increasing ids (the advice, and the bench's default)
// almost 5x dearer, half of it lookups.
package idemstore

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/bloom"
	"github.com/cockroachdb/pebble/v2/sstable"
	bolt "go.etcd.io/bbolt"
)

const (
	batch   = 1000
	preload = 1_000_000
	clients = 16
	valLen  = 100 // 8 time + 16 hash + a result of ≈ 76 bytes
)

// ids makes event ids as creditd bench does: increasing per client, 16
// clients interleaved, or random.
type ids struct {
	random bool
	seq    [clients]uint64
	rng    *rand.Rand
	n      uint64
}

func (g *ids) next(b []byte) []byte {
	g.n++
	c := g.n % clients
	g.seq[c]++
	if g.random {
		return fmt.Appendf(b[:0], "u%016x-%d", g.rng.Uint64(), g.n)
	}
	return fmt.Appendf(b[:0], "ubrun-e%d-%d", c, g.seq[c])
}

type store interface {
	batch(g *ids, val []byte) error
	close()
}

type boltStore struct{ db *bolt.DB }

func (s *boltStore) batch(g *ids, val []byte) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists([]byte("gen-1"))
		if err != nil {
			return err
		}
		b.FillPercent = 0.9
		c := b.Cursor()
		var k []byte
		for range batch {
			k = g.next(k)
			if kk, _ := c.Seek(k); kk != nil && string(kk) == string(k) {
				return fmt.Errorf("id %s seen", k)
			}
			if err := b.Put(k, val); err != nil {
				return err
			}
		}
		return nil
	})
}

func (s *boltStore) close() { s.db.Close() }

type pebbleStore struct{ db *pebble.DB }

func (s *pebbleStore) batch(g *ids, val []byte) error {
	wb := s.db.NewBatch()
	var k []byte
	for range batch {
		k = g.next(k)
		// In-batch repeats would need a map beside the batch; they are rare
		// and not priced here.
		if _, closer, err := s.db.Get(k); err == nil {
			closer.Close()
			return fmt.Errorf("id %s seen", k)
		} else if err != pebble.ErrNotFound {
			return err
		}
		if err := wb.Set(k, val, nil); err != nil {
			return err
		}
	}
	return wb.Commit(pebble.NoSync)
}

func (s *pebbleStore) close() { s.db.Close() }

func openPebble(dir string) (store, error) {
	mt, _ := strconv.Atoi(os.Getenv("MEMTABLE_MB"))
	if mt == 0 {
		mt = 64
	}
	cm, _ := strconv.Atoi(os.Getenv("CACHE_MB"))
	if cm == 0 {
		cm = 64
	}
	bs, _ := strconv.Atoi(os.Getenv("BLOCK_KB"))
	if bs == 0 {
		bs = 32
	}
	opts := &pebble.Options{
		MemTableSize: uint64(mt) << 20,
		Cache:        pebble.NewCache(int64(cm) << 20),
	}
	for i := range opts.Levels {
		opts.Levels[i].FilterPolicy = bloom.FilterPolicy(10)
		opts.Levels[i].BlockSize = bs << 10
		if os.Getenv("NOCOMPRESS") != "" {
			opts.Levels[i].Compression = func() *sstable.CompressionProfile { return sstable.NoCompression }
		}
	}
	db, err := pebble.Open(dir, opts)
	if err != nil {
		return nil, err
	}
	return &pebbleStore{db: db}, nil
}

func openBolt(dir string) (store, error) {
	db, err := bolt.Open(dir+"/state.db", 0o600, &bolt.Options{NoSync: true, NoGrowSync: true, NoFreelistSync: true,
		FreelistType: bolt.FreelistMapType})
	if err != nil {
		return nil, err
	}
	return &boltStore{db: db}, nil
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func BenchmarkIdempotency(b *testing.B) {
	for _, st := range []struct {
		name string
		open func(string) (store, error)
	}{{"bbolt", openBolt}, {"pebble", openPebble}} {
		for _, random := range []bool{false, true} {
			b.Run(fmt.Sprintf("store=%s/random=%v", st.name, random), func(b *testing.B) {
				s, err := st.open(b.TempDir())
				if err != nil {
					b.Fatal(err)
				}
				defer s.close()
				g := &ids{random: random, rng: rand.New(rand.NewPCG(1, 2))}
				val := make([]byte, valLen)
				for i := 0; i < preload/batch; i++ {
					binary.BigEndian.PutUint64(val, uint64(i))
					if err := s.batch(g, val); err != nil {
						b.Fatal(err)
					}
				}
				b.ResetTimer()
				cpu0 := cpuTime()
				for i := 0; i < b.N; i++ {
					if err := s.batch(g, val); err != nil {
						b.Fatal(err)
					}
				}
				b.StopTimer()
				b.ReportMetric(float64(cpuTime()-cpu0)/float64(b.N)/1e6, "cpu-ms/batch")
			})
		}
	}
}
