package store_test

import (
	"testing"

	"github.com/gatehouse-mcp/gatehouse/store/storetest"
)

func TestMain(m *testing.M) { storetest.Main(m) }
