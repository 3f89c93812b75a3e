"""Every write in the studio goes through a do_<verb>_<noun>() function in this
package, called alike by UI views, API views, tasks and the CLI (through the API)."""
