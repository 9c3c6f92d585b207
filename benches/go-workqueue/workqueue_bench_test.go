// Package goworkqueue benchmarks client-go's util/workqueue with the same scenarios, key shape
// and counts as benches/queue.rs. Run by benches/run-queue-bench.sh; every benchmark reports the
// scenario's figure with b.ReportMetric under the unit the report uses.
package goworkqueue

import (
	"fmt"
	"runtime"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"k8s.io/client-go/util/workqueue"
)

// keys returns n keys shaped like the operator's ("namespace/name"), built before measuring.
func keys(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("ns-%d/session-%d", i%100, i)
	}
	return out
}

func BenchmarkSerialAddGetDone(b *testing.B) {
	q := workqueue.NewTyped[string]()
	ks := keys(1024)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		q.Add(ks[i&1023])
		item, _ := q.Get()
		q.Done(item)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N), "ns/item")
}

func BenchmarkDedupHit(b *testing.B) {
	q := workqueue.NewTyped[string]()
	k := keys(1)[0]
	q.Add(k)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		q.Add(k)
	}
}

func drain(b *testing.B, workers int) {
	ks := keys(100_000)
	var total time.Duration
	for i := 0; i < b.N; i++ {
		q := workqueue.NewTyped[string]()
		for _, k := range ks {
			q.Add(k)
		}
		q.ShutDown() // Get keeps returning queued items, then reports shutdown
		start := time.Now()
		var wg sync.WaitGroup
		for w := 0; w < workers; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					item, shutdown := q.Get()
					if shutdown {
						return
					}
					q.Done(item)
				}
			}()
		}
		wg.Wait()
		total += time.Since(start)
	}
	b.ReportMetric(float64(len(ks)*b.N)/total.Seconds(), "items/s")
}

func BenchmarkDrain100k2Workers(b *testing.B) { drain(b, 2) }
func BenchmarkDrain100k4Workers(b *testing.B) { drain(b, 4) }

// BenchmarkAddStorm: 2 producers add flat out over 10k keys for 1 s while 2 workers Get/Done.
func BenchmarkAddStorm(b *testing.B) {
	ks := keys(10_000)
	var rate float64
	for i := 0; i < b.N; i++ {
		q := workqueue.NewTyped[string]()
		var stop atomic.Bool
		var done atomic.Int64
		var wg sync.WaitGroup
		for p := 0; p < 2; p++ {
			wg.Add(1)
			go func(p int) {
				defer wg.Done()
				for j := p; !stop.Load(); j++ {
					q.Add(ks[j%len(ks)])
				}
			}(p)
		}
		for w := 0; w < 2; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					item, shutdown := q.Get()
					if shutdown {
						return
					}
					done.Add(1)
					q.Done(item)
				}
			}()
		}
		time.Sleep(time.Second)
		n := done.Load()
		stop.Store(true)
		q.ShutDown()
		wg.Wait()
		rate = float64(n)
	}
	b.ReportMetric(rate, "items/s")
}

func heapAfterGC() uint64 {
	var m runtime.MemStats
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

func BenchmarkMemoryPerReadyKey(b *testing.B) {
	ks := keys(100_000)
	var per float64
	for i := 0; i < b.N; i++ {
		before := heapAfterGC()
		q := workqueue.NewTyped[string]()
		for _, k := range ks {
			q.Add(k)
		}
		after := heapAfterGC()
		per = float64(after-before) / float64(len(ks))
		runtime.KeepAlive(q)
		q.ShutDown()
	}
	b.ReportMetric(per, "B/key")
}

func BenchmarkMemoryPerDelayedKey(b *testing.B) {
	ks := keys(100_000)
	var per float64
	for i := 0; i < b.N; i++ {
		before := heapAfterGC()
		q := workqueue.NewTypedDelayingQueue[string]()
		for _, k := range ks {
			q.AddAfter(k, time.Hour)
		}
		time.Sleep(200 * time.Millisecond) // let the feed goroutine move everything into its heap
		after := heapAfterGC()
		per = float64(after-before) / float64(len(ks))
		runtime.KeepAlive(q)
		q.ShutDown()
	}
	b.ReportMetric(per, "B/key")
}

func BenchmarkAddAfter(b *testing.B) {
	q := workqueue.NewTypedDelayingQueue[string]()
	defer q.ShutDown()
	ks := keys(100_000)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		q.AddAfter(ks[i%len(ks)], time.Hour+time.Duration(i))
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N), "ns/op")
}

// BenchmarkTimerLateness: 10k keys due uniformly within 100 ms, 2 workers; p99 of (get - due).
func BenchmarkTimerLateness(b *testing.B) {
	const n = 10_000
	ks := keys(n)
	var p99 float64
	for i := 0; i < b.N; i++ {
		q := workqueue.NewTypedDelayingQueue[string]()
		due := make(map[string]time.Time, n)
		start := time.Now()
		for j, k := range ks {
			d := time.Duration(j) * 100 * time.Millisecond / n
			due[k] = start.Add(d)
			q.AddAfter(k, d)
		}
		late := make([]float64, 0, n)
		var mu sync.Mutex
		var wg sync.WaitGroup
		for w := 0; w < 2; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					item, shutdown := q.Get()
					if shutdown {
						return
					}
					l := time.Since(due[item]).Seconds() * 1000
					q.Done(item)
					mu.Lock()
					late = append(late, l)
					full := len(late) == n
					mu.Unlock()
					if full {
						q.ShutDown()
					}
				}
			}()
		}
		wg.Wait()
		sort.Float64s(late)
		p99 = late[len(late)*99/100]
	}
	b.ReportMetric(p99, "ms_p99")
}

// BenchmarkFailureTail: 10k simultaneous failures through the default controller rate limiter;
// the longest assigned wait (the limiter's own answer; waiting it out would take ~16 min).
func BenchmarkFailureTail(b *testing.B) {
	ks := keys(10_000)
	var worst time.Duration
	for i := 0; i < b.N; i++ {
		rl := workqueue.DefaultTypedControllerRateLimiter[string]()
		worst = 0
		for _, k := range ks {
			if d := rl.When(k); d > worst {
				worst = d
			}
		}
	}
	b.ReportMetric(worst.Seconds(), "s_max_wait")
}

// BenchmarkSpuriousEvents: a key fails; 100 events for it arrive during its backoff, each one is
// processed and fails again. Reports the backoff the key then gets (a key without events: 5 ms).
func BenchmarkSpuriousEvents(b *testing.B) {
	k := keys(1)[0]
	var next time.Duration
	for i := 0; i < b.N; i++ {
		q := workqueue.NewTypedRateLimitingQueue[string](workqueue.NewTypedItemExponentialFailureRateLimiter[string](5*time.Millisecond, 1000*time.Second))
		q.AddRateLimited(k)
		for e := 0; e < 100; e++ {
			q.Add(k)
			item, _ := q.Get()
			q.AddRateLimited(item)
			q.Done(item)
		}
		next = time.Duration(5*time.Millisecond) << min(q.NumRequeues(k), 40)
		if next > 1000*time.Second || next <= 0 {
			next = 1000 * time.Second
		}
		q.ShutDown()
	}
	b.ReportMetric(next.Seconds()*1000, "ms_next_backoff")
}

// BenchmarkNewKeyWaitDuringBacklog: 100k keys queued (initial list, 2 µs of work each), 2 workers
// drain them while a
// fresh key arrives every 100 µs; p99 of a fresh key's wait. client-go has one FIFO lane.
func BenchmarkNewKeyWaitDuringBacklog(b *testing.B) {
	ks := keys(100_000)
	fresh := keys(200_000)[100_000:]
	var p99 float64
	for i := 0; i < b.N; i++ {
		q := workqueue.NewTyped[string]()
		for _, k := range ks {
			q.Add(k)
		}
		added := sync.Map{}
		waits := make([]float64, 0, 1024)
		var mu sync.Mutex
		var backlogLeft atomic.Int64
		backlogLeft.Store(int64(len(ks)))
		var wg sync.WaitGroup
		for w := 0; w < 2; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					item, shutdown := q.Get()
					if shutdown {
						return
					}
					// 2 µs of "reconcile" per item, same as benches/queue.rs.
					for t := time.Now(); time.Since(t) < 2*time.Microsecond; {
					}
					if t, ok := added.Load(item); ok {
						mu.Lock()
						waits = append(waits, time.Since(t.(time.Time)).Seconds()*1000)
						mu.Unlock()
					} else if backlogLeft.Add(-1) == 0 {
						q.ShutDown()
					}
					q.Done(item)
				}
			}()
		}
		for j := 0; backlogLeft.Load() > 0 && j < len(fresh); j++ {
			added.Store(fresh[j], time.Now())
			q.Add(fresh[j])
			time.Sleep(100 * time.Microsecond)
		}
		wg.Wait()
		sort.Float64s(waits)
		if len(waits) > 0 {
			p99 = waits[len(waits)*99/100]
		}
	}
	b.ReportMetric(p99, "ms_p99")
}

// BenchmarkFairnessSingleKeyPosition: tenant A has 10k queued keys, then tenant B adds one key;
// how many items are handed out before B's key (one FIFO: all of A's).
func BenchmarkFairnessSingleKeyPosition(b *testing.B) {
	ks := keys(10_000)
	var pos int
	for i := 0; i < b.N; i++ {
		q := workqueue.NewTyped[string]()
		for j := range ks {
			q.Add("ns-a/" + ks[j])
		}
		q.Add("ns-b/only")
		for pos = 0; ; pos++ {
			item, _ := q.Get()
			q.Done(item)
			if item == "ns-b/only" {
				break
			}
		}
		q.ShutDown()
	}
	b.ReportMetric(float64(pos), "items_before")
}
