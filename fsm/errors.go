package fsm

import (
	"errors"
	"fmt"
)

// Code classifies a domain error; rpc maps it to a Connect code.
type Code uint8

const (
	CodeInvalid            Code = iota + 1 // a field is wrong
	CodeNotFound                           // an id names nothing
	CodeAlreadyExists                      // an id is taken by something different
	CodeInsufficient                       // not enough credits
	CodeFailedPrecondition                 // the state does not allow it
	CodeConflict                           // an idempotency key reused with another payload
)

func (c Code) String() string {
	switch c {
	case CodeInvalid:
		return "invalid"
	case CodeNotFound:
		return "not found"
	case CodeAlreadyExists:
		return "already exists"
	case CodeInsufficient:
		return "insufficient credits"
	case CodeFailedPrecondition:
		return "failed precondition"
	case CodeConflict:
		return "conflict"
	}
	return "unknown"
}

// Error is a domain error: which field, what is wrong, and for
// CodeInsufficient the credits available and needed.
type Error struct {
	Code      Code
	Field     string
	Msg       string
	Available int64
	Needed    int64
}

func (e *Error) Error() string {
	if e.Field != "" {
		return e.Field + ": " + e.Msg
	}
	return e.Msg
}

// Is makes errors.Is(err, &Error{Code: c}) match by code.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Code == e.Code && (t.Field == "" || t.Field == e.Field)
}

func invalid(field, format string, args ...any) *Error {
	return &Error{Code: CodeInvalid, Field: field, Msg: fmt.Sprintf(format, args...)}
}

func notFound(field, format string, args ...any) *Error {
	return &Error{Code: CodeNotFound, Field: field, Msg: fmt.Sprintf(format, args...)}
}

func precondition(field, format string, args ...any) *Error {
	return &Error{Code: CodeFailedPrecondition, Field: field, Msg: fmt.Sprintf(format, args...)}
}

func conflict(field, format string, args ...any) *Error {
	return &Error{Code: CodeConflict, Field: field, Msg: fmt.Sprintf(format, args...)}
}

func insufficient(available, needed int64) *Error {
	return &Error{Code: CodeInsufficient, Msg: fmt.Sprintf("not enough credits: available %d, needed %d", available, needed),
		Available: available, Needed: needed}
}

// CodeOf returns the domain code of err, or 0 if err is not a domain error.
func CodeOf(err error) Code {
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return 0
}

// ErrUnknownVersion is returned for an entry encoded by a newer creditd.
var ErrUnknownVersion = errors.New("unknown command encoding version")
