package eventbus_test

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"strings"

	"github.com/seed-a6f1faae/eventbus"
)

// This example appends events to a file store, closes it, and reads them
// back after reopening the directory.
func ExampleOpenFileStore() {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "eventbus-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)

	store, err := eventbus.OpenFileStore(dir, nil) // SyncAlways: durable on return
	if err != nil {
		log.Fatal(err)
	}
	_, err = store.Append(ctx, "account-1", eventbus.NoStream,
		eventbus.EventData{ID: eventbus.NewID(), Type: "account.opened", Data: []byte(`{"owner":"ada"}`)},
		eventbus.EventData{ID: eventbus.NewID(), Type: "account.deposited", Data: []byte(`{"amount":100}`)},
	)
	if err != nil {
		log.Fatal(err)
	}
	if err := store.Close(); err != nil {
		log.Fatal(err)
	}

	store, err = eventbus.OpenFileStore(dir, nil)
	if err != nil {
		log.Fatal(err)
	}
	defer store.Close()
	for e, err := range store.ReadStream(ctx, "account-1", nil) {
		if err != nil {
			log.Fatal(err)
		}
		fmt.Println(e.Revision, e.Type, string(e.Data))
	}
	// Output:
	// 0 account.opened {"owner":"ada"}
	// 1 account.deposited {"amount":100}
}

// This example damages a record in the middle of a file store, as a disk
// fault would: opening fails with a *CorruptionError, and RepairFileStore
// cuts the log at the damage, keeping what it cuts aside.
func ExampleRepairFileStore() {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "eventbus-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	store, err := eventbus.OpenFileStore(dir, nil)
	if err != nil {
		log.Fatal(err)
	}
	for _, amount := range []string{"100", "50", "20"} { // one record each
		e := eventbus.EventData{ID: eventbus.NewID(), Type: "account.deposited", Data: []byte(`{"amount":` + amount + `}`)}
		if _, err := store.Append(ctx, "account-1", eventbus.Any, e); err != nil {
			log.Fatal(err)
		}
	}
	if err := store.Close(); err != nil {
		log.Fatal(err)
	}

	// The disk fault: a bit flips in the second record. Records follow
	// the segment's 32-byte header, each a length, a checksum and a payload.
	segments, err := filepath.Glob(filepath.Join(dir, "seg-*.log"))
	if err != nil || len(segments) != 1 {
		log.Fatal(segments, err)
	}
	b, err := os.ReadFile(segments[0])
	if err != nil {
		log.Fatal(err)
	}
	second := 32 + 8 + binary.LittleEndian.Uint32(b[32:])
	b[second+8] ^= 1
	if err := os.WriteFile(segments[0], b, 0o644); err != nil {
		log.Fatal(err)
	}

	_, err = eventbus.OpenFileStore(dir, nil)
	var corrupt *eventbus.CorruptionError
	if errors.As(err, &corrupt) {
		fmt.Println("open:", corrupt.Reason)
	}
	kept, err := eventbus.RepairFileStore(dir)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("cut records kept in:", strings.HasPrefix(filepath.Base(kept), "repair-"))
	store, err = eventbus.OpenFileStore(dir, nil)
	if err != nil {
		log.Fatal(err)
	}
	defer store.Close()
	for e, err := range store.ReadStream(ctx, "account-1", nil) {
		if err != nil {
			log.Fatal(err)
		}
		fmt.Println(e.Revision, e.Type, string(e.Data))
	}
	// Output:
	// open: checksum mismatch
	// cut records kept in: true
	// 0 account.deposited {"amount":100}
}
