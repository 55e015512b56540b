// Command sleeper is the only process of the images the kubelet e2e runs, and of its pod
// sandbox image: it waits for SIGTERM or SIGINT and exits 0, or, with -exit-after, exits by
// itself (a container that keeps restarting).
package main

import (
	"flag"
	"os"
	"os/signal"
	"syscall"
	"time"
)

func main() {
	exitAfter := flag.Duration("exit-after", 0, "exit 0 after this long (0: wait for SIGTERM or SIGINT)")
	flag.Parse()
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	var after <-chan time.Time
	if *exitAfter > 0 {
		after = time.After(*exitAfter)
	}
	select {
	case <-sigs:
	case <-after:
	}
}
