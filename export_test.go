package apify

// LongMode is longMode for the external tests (soak, simulation).
var LongMode = longMode
